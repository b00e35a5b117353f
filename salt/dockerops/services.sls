{#- Every service in pillar `dockerops:services`: its config directory (when it
    has one), then its containers, which require the config. #}
{%- from tpldir ~ "/map.jinja" import dockerops with context %}

{%- for service, spec in dockerops.services | dictsort %}
{%-   if spec.get("config") %}
dockerops-service-{{ service }}-config-managed:
  dockerops.config_managed:
    - name: {{ service }}
{%-   endif %}

dockerops-service-{{ service }}-running:
  dockerops.running:
    - name: {{ service }}
{%-   if spec.get("config") %}
    - require:
      - dockerops: dockerops-service-{{ service }}-config-managed
{%-   endif %}
{%- endfor %}
