"""Checkpoint conversion: foreign weights (PyTorch, Hugging Face) -> this project's parameter trees.

One way for every converter:

    tensors = sources.read_tensors(path, nesting=("model_state_dict",))   # safetensors or a torch file
    state = name_map.convert(tensors, RULES, abstract_state)               # declarative table, fully validated
    converted.save(out_dir, state, model_config=..., motion_spec=...)      # Orbax + JSON, loadable by name

`RULES` is one table per model (a tuple of `name_map.Rule`): a regex over source keys, a target path template
and an optional per-tensor hook (transpose, conv layout, buffer check). Conversion fails with one error that
lists every missing, unused and mis-shaped key, never silently.
"""
