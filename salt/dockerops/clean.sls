{#- Undo init.sls: remove the containers and config directories of every
    service in pillar. Data directories are left alone. #}
{%- from tpldir ~ "/map.jinja" import dockerops with context %}

{%- for service in dockerops.services | sort %}
dockerops-service-{{ service }}-absent:
  dockerops.absent:
    - name: {{ service }}
    - remove_config: true
{%- endfor %}
