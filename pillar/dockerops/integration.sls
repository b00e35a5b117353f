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
        # Speed over capacity in integration: two at a time, in place.
        order: stop-first
        parallelism: 2
