"""Running the stages: the plan, each stage, resume, the output lock and export."""
