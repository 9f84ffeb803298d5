import os

# One torch thread per test process: two threads on a busy 2-core machine spin-wait (see the README).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

torch.set_num_threads(1)
