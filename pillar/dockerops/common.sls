# Shared by every environment; the environment files lay their values over it
# (dicts merge key by key, lists are replaced).
dockerops:
  # Where every service's snapshots go (restic), outside allowed_host_paths.
  backup:
    repository: /var/backups/dockerops/restic
    # An example only: keep the real password in an encrypted pillar (GPG renderer).
    password: demo-only-change-me
  defaults:
    restart_policy: on-failure:5
    logging:
      driver: json-file
      options: {max-size: 10m, max-file: "3"}
  services:
    web:
      image: dockerops/demo-http
      tag: "1.0"
      replicas: 1
      env:
        GREETING: hello
      secrets:
        # An example only: real secrets belong in an encrypted pillar (GPG renderer).
        API_TOKEN: change-me
      ports:
        - container: 8080
          host: 18080
          host_ip: 127.0.0.1
      config:
        path: /etc/app
        on_change: rolling
        files:
          web.conf:
            source: salt://demo/web.conf.jinja
            template: jinja
          motd.txt:
            contents: "Welcome to the dockerops demo.\n"
      data:
        - {host: /srv/dockerops/web/data, container: /data}
      backup:
        consistency: stop         # init: true below makes the stop take well under a second
        keep: {last: 7, daily: 7}
      update:
        health_timeout: 30s
      # Production hardening: Docker's init as PID 1 (a stop takes well under a
      # second), bounded memory and processes, no capabilities at all.
      init: true
      resources: {memory: 64m, pids_limit: 100}
      cap_drop: [ALL]
