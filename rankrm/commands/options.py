"""The data options evaluate and export share with train, from ``TrainConfig``'s own
definitions (``training.config``, torch-free)."""

from __future__ import annotations

from typing import Annotated

from rankrm.commands.generate import typer_info
from training.config import FORMAT_OPT, HAS_PROMPT_OPT, LIST_SIZE_OPT, SEED_OPT, SKIP_BAD_OPT
from training.data import DataFormat

# The data options evaluate and export share with train: defined once, on TrainConfig.
FormatOpt = Annotated[DataFormat, typer_info(FORMAT_OPT)]
PromptOpt = Annotated[bool, typer_info(HAS_PROMPT_OPT)]
ListSizeOpt = Annotated[int, typer_info(LIST_SIZE_OPT)]
SkipOpt = Annotated[bool, typer_info(SKIP_BAD_OPT)]
SeedOpt = Annotated[int, typer_info(SEED_OPT)]
