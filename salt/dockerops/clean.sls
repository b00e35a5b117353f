{#- Undo init.sls: remove the containers of every service in pillar. #}
{%- from tpldir ~ "/map.jinja" import dockerops with context %}

{%- for service in dockerops.services | sort %}
dockerops-service-{{ service }}-absent:
  dockerops.absent:
    - name: {{ service }}
{%- endfor %}
