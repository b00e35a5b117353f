dockerops:
  environment: integration
  services:
    web:
      tag: "1.1"
      replicas: 2
      env:
        LOG_LEVEL: debug
