# Environments are assigned by minion id, which the master authenticates (a
# minion's key is bound to its id). Grains are set by the minion about itself,
# so matching on them would let any minion claim production's pillar (and its
# secrets).
base:
  '*':
    - dockerops.common
  'int-*':
    - dockerops.integration
  'stg-*':
    - dockerops.staging
  'prd-*':
    - dockerops.production
