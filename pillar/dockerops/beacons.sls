# The dockerops beacon: an event per change of a replica's condition
# (salt/beacon/<minion>/dockerops/<service>/<event>), and the metrics file
# refreshed each pass. Not in top.sls by default; to turn it on, list it:
#   base:
#     '*':
#       - dockerops.common
#       - dockerops.beacons
# and add the reactor for its crash-loop and give-up events to the master
# config (README, "Events for the master").
beacons:
  dockerops:
    - interval: 10
