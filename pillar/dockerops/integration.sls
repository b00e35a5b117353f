dockerops:
  environment: integration
  services:
    web:
      tag: "1.1"
      replicas: 2
      env:
        LOG_LEVEL: debug
      logging:
        options: {max-size: 1m}
      update:
        min_healthy_time: 0s
