"""Run several ``omni`` commands in one pair of DDP processes (the suite's DDP runs share one start-up).

    python tests/ddp_fits.py JOBS.json     # JOBS.json: [["fit", "--config", ...], ["predict", ...], ...]

Each job is ``omni.cli.main(job)``. The first job's trainer (``--trainer.strategy ddp --trainer.devices 2``) starts
rank 1 through Lightning's launcher, which runs this same command line again with ``LOCAL_RANK=1``; later jobs find
the process group ready, as a script that calls ``Trainer.fit`` twice does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omni.cli import main
from omni.ranks import close_process_group

if __name__ == "__main__":
    for job in json.loads(Path(sys.argv[1]).read_text()):
        main(job)
    close_process_group()  # both ranks end the group together, as the console command does
