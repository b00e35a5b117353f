dockerops:
  environment: production
  services:
    web:
      tag: "1.0"
      replicas: 3
      env:
        LOG_LEVEL: warning
