dockerops:
  environment: production
  services:
    web:
      tag: "1.0"
      replicas: 3
      env:
        LOG_LEVEL: warning
      logging:
        options: {max-size: 50m, max-file: "5"}
      update:
        min_healthy_time: 5s
