{#- Every service in pillar `dockerops:services`: its config directory (when it
    has one, on the service or under `dockerops:defaults`: the library says
    which, in one call), then its containers, which require the config. Names
    are quoted: a service name never changes the shape of the YAML rendered
    here. #}
{%- from tpldir ~ "/map.jinja" import dockerops, dockerops_problems with context %}

{%- if dockerops_problems %}
{%-   include tpldir ~ "/invalid.jinja" %}
{%- else %}
{%-   set with_config = salt["dockerops.services_with_config"]() if dockerops.services else [] %}
{#-   Services with no replica running start in parallel (Salt's `parallel`):
      nothing running is at risk, and their starts and health waits overlap.
      The last service's state always runs in the state run itself: dockerops
      writes its metrics there, once every service has finished. #}
{%-   set first_deploys = salt["dockerops.first_deploys"]()
        if dockerops.services and not opts.get("test") else [] %}
{%-   set last = (dockerops.services | sort | last) if dockerops.services else none %}
{%-   for service in dockerops.services | sort %}
{%-     set config_id = "dockerops-service-" ~ service ~ "-config-managed" %}
{%-     if service in with_config %}
{{ config_id | yaml_dquote }}:
  dockerops.config_managed:
    - name: {{ service | yaml_dquote }}
{%-     endif %}

{{ ("dockerops-service-" ~ service ~ "-running") | yaml_dquote }}:
  dockerops.running:
    - name: {{ service | yaml_dquote }}
{%-     if service in first_deploys and service != last %}
    - parallel: True
{%-     endif %}
{%-     if service in with_config %}
    - require:
      - dockerops: {{ config_id | yaml_dquote }}
{%-     endif %}
{%-   endfor %}
{%- endif %}
