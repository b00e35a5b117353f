{#- Backups on a schedule: each pillar service with `backup: {schedule: ...}`
    gets an entry in the minion's own Salt scheduler (no cron),
    `dockerops-backup-<service>`, that runs `dockerops.backup <service>`; it is
    saved in the minion's config (persist), so it outlives a restart. The
    `dockerops-backup-*` entries of services that no longer have a schedule
    are removed. A service whose pillar is invalid keeps its entry as it is,
    and its state fails saying why. The library says which, in one call
    (dockerops.schedules, whose JOB_PREFIX is the entries' prefix here). #}
{%- from tpldir ~ "/map.jinja" import dockerops_problems with context %}

{%- if not dockerops_problems %}
{%-   set backups = salt["dockerops.backup_schedules"]() %}
{%-   if backups.problems %}
dockerops-backups-pillar-invalid:
  test.configurable_test_state:
    - name: dockerops pillar
    - changes: false
    - result: false
    - allow_test_mode_failure: true
    - comment: {{ ("invalid dockerops pillar:\n  " ~ backups.problems | join("\n  ")) | yaml_dquote }}
{%-   endif %}
{%-   for service, schedule in backups.schedules | dictsort %}

{{ ("dockerops-backup-" ~ service ~ "-schedule-present") | yaml_dquote }}:
  schedule.present:
    - name: {{ ("dockerops-backup-" ~ service) | yaml_dquote }}
    - function: dockerops.backup
    - job_args:
      - {{ service | yaml_dquote }}
{%-     for key, value in schedule | dictsort %}
    - {{ key }}: {{ value | json }}
{%-     endfor %}
    - persist: true
{%-   endfor %}
{%-   for service, problems in backups.invalid | dictsort %}

{{ ("dockerops-backup-" ~ service ~ "-schedule-invalid") | yaml_dquote }}:
  test.configurable_test_state:
    - name: {{ ("dockerops-backup-" ~ service) | yaml_dquote }}
    - changes: false
    - result: false
    - allow_test_mode_failure: true
    - comment: {{ ("backup schedule left as it is: invalid dockerops pillar:\n  "
                   ~ problems | join("\n  ")) | yaml_dquote }}
{%-   endfor %}
{%-   for job in backups.stale %}

{{ (job ~ "-schedule-absent") | yaml_dquote }}:
  schedule.absent:
    - name: {{ job | yaml_dquote }}
    - persist: true
{%-   endfor %}
{%- endif %}
