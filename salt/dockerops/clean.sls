{#- Undo init.sls: remove the containers of every service in pillar and, from
    each config directory, what dockerops wrote there (the directory too once
    empty). A directory dockerops does not own is refused, not deleted. Data
    directories are left alone. #}
{%- from tpldir ~ "/map.jinja" import dockerops, dockerops_problems with context %}

{%- if dockerops_problems %}
{%-   include tpldir ~ "/invalid.jinja" %}
{%- else %}
{%-   for service in dockerops.services | sort %}
{{ ("dockerops-service-" ~ service ~ "-absent") | json }}:
  dockerops.absent:
    - name: {{ service | json }}
    - remove_config: true
{%-   endfor %}
{%- endif %}
