{#- Undo init.sls: remove the containers of every service in pillar and, from
    each config directory, what dockerops wrote there (the directory too once
    empty). A directory dockerops does not own is refused, not deleted. Data
    directories and log files are left alone. #}
{%- from tpldir ~ "/map.jinja" import dockerops, dockerops_problems with context %}

{%- if dockerops_problems %}
{%-   include tpldir ~ "/invalid.jinja" %}
{%- else %}
{%-   for service in dockerops.services | sort %}
{{ ("dockerops-service-" ~ service ~ "-absent") | yaml_dquote }}:
  dockerops.absent:
    - name: {{ service | yaml_dquote }}
    - remove_config: true
{%-   endfor %}
{#-   The forwarder inputs and logrotate rules filelogs.sls wrote; the log
      files themselves are kept. #}
{%-   set file_logs = salt["dockerops.file_logs"]() if dockerops.services else {"services": {}} %}
{%-   for service, logs in file_logs["services"] | dictsort %}
{%-     for kind in ["filebeat", "rsyslog", "logrotate"] %}

{{ ("dockerops-filelogs-" ~ service ~ "-" ~ kind ~ "-file-absent") | yaml_dquote }}:
  file.absent:
    - name: {{ logs[kind ~ "_file"] | yaml_dquote }}
{%-     endfor %}
{%-   endfor %}
{%- endif %}
