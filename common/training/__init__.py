"""A training's life: the command line (`cli`, `options`), the run folder and its files
(`run_folder`, `files`, `checkpoints`), the loop skeleton both trainings share (`run`), its log
(`runlog`) and stopping on a signal (`stopping`)."""
