dockerops:
  environment: staging
  services:
    web:
      tag: "1.0"
      replicas: 2
      env:
        LOG_LEVEL: info
