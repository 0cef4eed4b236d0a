"""Methods: what each of `direct`, `freeswim` and `relay` changes in the engine (stages, attention plan)."""
