"""What synth/, train/ and eval/ stand on: dataset directories, the config parser and model roles, engines,
"answer a prompt set", shards, processes and the Ray cluster, models, templates, the record schema, tracking and
the run layout. It imports none of the project's other packages."""
