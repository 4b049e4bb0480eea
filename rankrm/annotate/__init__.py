"""The annotation app: people rank K responses to a prompt in a browser; the rankings go to
a database and come out as rankrm's JSONL ranking format, ready for ``rankrm train``.

Follow one ranking through the modules:

``tasks``       read a task file (``FILE:LINE`` errors) into :class:`~.tasks.TaskSpec`
``database``    open SQLite (WAL) or PostgreSQL, migrate the schema with alembic
``schema``      the tables: tasks, annotators, assignments (one row per task shown)
``store``       serve the next task, take a submission, skip, cannot-rank, undo
``replies``     what the store answers: its refusals (AnnotateError) and records
``web``         the FastAPI app: the page, its JSON API, the dashboard
``consensus``   orders with ties, Borda and ranked pairs, agreement and Kendall's W
``stats``       the dashboard's figures and plots
``export``      rankings out as JSONL, one per annotator or one consensus per task
``model_loop``  optional: a running ``rankrm serve`` orders tasks by the model's doubt

It is its own FastAPI app and command (``rankrm annotate``) and never imports torch.
"""
