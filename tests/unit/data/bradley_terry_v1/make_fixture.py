"""Written once with the pre-split bradley_terry.py (commit c99b304) to pin checkpoint compatibility."""
import json
import os
import sys

import numpy as np
import torch

from mmroute.preference import BradleyTerry

torch.set_num_threads(1)
out = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.standard_normal((300, 4)).astype(np.float32)
ia = rng.integers(0, 3, 300)
ib = (ia + rng.integers(1, 3, 300)) % 3
z = np.array([0.8, 0.0, -0.8])[ia] - np.array([0.8, 0.0, -0.8])[ib] + X[:, 0] * (ia == 1)
y = (rng.random(300) < 1 / (1 + np.exp(-z))).astype(float)
names = np.array(["m0", "m1", "m2"], dtype=object)
pairs = names[np.stack([ia, ib], 1)]
m = BradleyTerry(rank=2, max_epochs=40).fit(X, pairs, y)
m.calibrate(X[:100], pairs[:100], y[:100])
m.save(out)
Xq = rng.standard_normal((5, 4)).astype(np.float32)
Xn = rng.standard_normal((10, 4)).astype(np.float32)
pn = [("m0", "m1"), ("m2", "m3")] * 5
yn = [1.0, 0.0] * 5
exp = {"X": Xq.tolist(), "expected_quality": m.expected_quality(Xq).tolist(),
       "predict_proba": m.predict_proba(Xq, pairs[:5]).tolist(), "pairs": pairs[:5].tolist(),
       "partial_fit": {"X": Xn.tolist(), "pairs": pn, "y": yn}}
m.partial_fit(Xn, pn, yn)
exp["partial_fit"]["expected_quality"] = m.expected_quality(Xq).tolist()
json.dump(exp, open(os.path.join(out, "expected.json"), "w"), indent=1)
