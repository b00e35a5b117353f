{#- Roll a service across the fleet from the master, with settings from pillar:

      salt-run state.orchestrate orch.dockerops.rolling_update \
        pillar='dockerops_rollout: {service: web, tgt: "prd-*", tag: "1.5"}'
#}
{%- set rollout = salt["pillar.get"]("dockerops_rollout", {}) %}
{%- set service = rollout.get("service", "web") %}

dockerops-orch-{{ service }}-rolling-update:
  salt.runner:
    - name: dockerops.rolling_update
    - kwarg:
        name: {{ service }}
        tgt: {{ rollout.get("tgt", "*") | yaml_encode }}
        tgt_type: {{ rollout.get("tgt_type", "glob") }}
        batch: {{ rollout.get("batch", "25%") | yaml_encode }}
        canary: {{ rollout.get("canary", 1) }}
        min_healthy: {{ rollout.get("min_healthy", "75%") | yaml_encode }}
        max_failures: {{ rollout.get("max_failures", 0) }}
        {%- if rollout.get("tag") %}
        tag: {{ rollout["tag"] | string | yaml_encode }}
        {%- endif %}
