# React to the dockerops beacon (salt/beacon/<minion>/dockerops/<service>/<event>).
# A crash loop or give-up restarts the service on that minion once; within
# the window after that, further events are only recorded (never a loop).
# Every event is recorded on the master: <cachedir>/dockerops/reactions.json.
# Master config:
#   reactor:
#     - 'salt/beacon/*/dockerops/*/crash_loop':
#       - salt://reactor/dockerops.sls
#     - 'salt/beacon/*/dockerops/*/gave_up':
#       - salt://reactor/dockerops.sls
dockerops_react_{{ data.get('service', 'unknown') }}_{{ data.get('event', 'event') }}:
  runner.dockerops.react:
    - args:
        - data: {{ data | json }}
        # False: record only.
        - restart: True
        - window: 1h
