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
        # Watch each new replica for 10s before moving on; allow slow starts.
        min_healthy_time: 10s
        health_timeout: 90s
