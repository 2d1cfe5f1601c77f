"""Dataset factories: they write bundles in the on-disk format of `mtic.data`.

`demo` builds the embedded, hand-written market bundles; `prepare` converts public benchmarks (SGD, xSID,
Banking77) found under `paths.datasets_dir`; `craft` turns single-turn queries into multi-turn sessions with an
intent-transition model (both use it).
"""
