# React to the dockerops_etcd beacon (salt/beacon/<minion>/dockerops_etcd/<service>/changed):
# keys under a prefix one of the service's config files comes from changed in etcd.
# Applies only that service's states on that minion: its config (rendered from
# the store again, checked with config:check) and its containers, which then
# follow config:on_change (rolling, restart, signal) through the health-gated path.
# Master config:
#   reactor:
#     - 'salt/beacon/*/dockerops_etcd/*/changed':
#       - salt://reactor/dockerops_etcd.sls
{%- set service = data.get('service', '') | string %}
{%- if service and data.get('id') %}
{{ ("dockerops_etcd_" ~ service ~ "_changed") | yaml_dquote }}:
  local.state.sls_id:
    - tgt: {{ data['id'] | yaml_dquote }}
    - args:
        - id_: {{ ("dockerops-service-" ~ service ~ "-running") | yaml_dquote }}
        - mods: dockerops.services
{%- endif %}
