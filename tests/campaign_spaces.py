"""The small search spaces the campaign tests share (generated data, a few epochs)."""

SPACE_MF = """mode: tpe
base: {model: {name: mf, dim: 8}, ddrm: {enabled: false}, train: {epochs: 2, patience: 2, threads: 1}}
space:
  model.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-1}
scheduler: {type: fifo}
"""
SPACE_DDRM = """mode: tpe
base: {ddrm: {enabled: true, steps: 3, hidden_dims: [8, 16], epochs: 2}, train: {epochs: 2, patience: 2, threads: 1}}
space:
  ddrm.bpr_weight: {type: uniform, low: 0.1, high: 0.9}
scheduler: {type: fifo}
"""
SPACE_EASE = """mode: grid
base: {model: {name: ease}}
space:
  model.ease_lambda: {type: choice, values: [10, 100]}
scheduler: {type: fifo}
"""
