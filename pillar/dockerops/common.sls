# Shared by every environment; the environment files lay their values over it.
dockerops:
  defaults:
    restart_policy: on-failure:5
  services:
    web:
      image: dockerops/demo-http
      tag: "1.0"
      replicas: 1
      env:
        GREETING: hello
      ports:
        - container: 8080
          host: 18080
          host_ip: 127.0.0.1
