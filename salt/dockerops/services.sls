{#- One dockerops.running state per service in pillar `dockerops:services`. #}
{%- from tpldir ~ "/map.jinja" import dockerops with context %}

{%- for service in dockerops.services | sort %}
dockerops-service-{{ service }}-running:
  dockerops.running:
    - name: {{ service }}
{%- endfor %}
