{#- Every service in pillar `dockerops:services`: its config directory (when it
    has one), then its containers, which require the config. Names are quoted:
    a service name never changes the shape of the YAML rendered here. #}
{%- from tpldir ~ "/map.jinja" import dockerops, dockerops_problems with context %}

{%- if dockerops_problems %}
{%-   include tpldir ~ "/invalid.jinja" %}
{%- else %}
{%-   for service, spec in dockerops.services | dictsort %}
{%-     set config_id = "dockerops-service-" ~ service ~ "-config-managed" %}
{%-     if spec.get("config") %}
{{ config_id | json }}:
  dockerops.config_managed:
    - name: {{ service | json }}
{%-     endif %}

{{ ("dockerops-service-" ~ service ~ "-running") | json }}:
  dockerops.running:
    - name: {{ service | json }}
{%-     if spec.get("config") %}
    - require:
      - dockerops: {{ config_id | json }}
{%-     endif %}
{%-   endfor %}
{%- endif %}
