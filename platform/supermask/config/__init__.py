"""Config layer: task-stream specs and sweep specs, validated up front, with `--set a.b=c` overrides."""
