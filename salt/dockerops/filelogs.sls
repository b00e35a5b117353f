{#- File logs: for each pillar service that declares `logs: {path: ...}`, a
    Filebeat filestream input, an rsyslog imfile input and a logrotate rule for
    its host directories (<dockerops:logs:root>/<service>/<slot>/). The
    library says which services, where each file goes and its settings, in
    one call. Nothing is written for a service without `logs`. #}
{%- from tpldir ~ "/map.jinja" import dockerops, dockerops_problems with context %}

{%- if not dockerops_problems and dockerops.services %}
{%-   set file_logs = salt["dockerops.file_logs"]() %}
{%-   if file_logs.problems %}
dockerops-filelogs-pillar-invalid:
  test.configurable_test_state:
    - name: dockerops pillar
    - changes: false
    - result: false
    - allow_test_mode_failure: true
    - comment: {{ ("invalid dockerops pillar:\n  " ~ file_logs.problems | join("\n  ")) | yaml_dquote }}
{%-   endif %}
{%-   if file_logs.rsyslog_module_file %}

dockerops-filelogs-rsyslog-imfile-module-file-managed:
  file.managed:
    - name: {{ file_logs.rsyslog_module_file | yaml_dquote }}
    - contents: |
        # Written by the dockerops formula: the file-log inputs of its services need imfile.
        module(load="imfile")
    - makedirs: true
    - mode: "0644"
{%-   endif %}
{%-   for service, logs in file_logs.services | dictsort %}
{%-     for kind in ["filebeat", "rsyslog", "logrotate"] %}

{{ ("dockerops-filelogs-" ~ service ~ "-" ~ kind ~ "-file-managed") | yaml_dquote }}:
  file.managed:
    - name: {{ logs[kind ~ "_file"] | yaml_dquote }}
    - source: {{ ("salt://" ~ tpldir ~ "/files/" ~ kind ~ ".jinja") | yaml_dquote }}
    - template: jinja
    - makedirs: true
    - mode: "0644"
    - context:
        service: {{ service | yaml_dquote }}
        logs: {{ logs | json }}
{%-     endfor %}
{%-   endfor %}
{%- endif %}
