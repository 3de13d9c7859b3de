"""Console entry points: ``dynamics`` (:mod:`.app`), ``dynamics-submit`` (:mod:`.submit`) and their sub-commands."""
