/** Basic layers. Shapes: N = rows (batch x positions flattened), D = features. */
import * as b from '../ir/build.js';
import { Tensor } from '../tensor/tensor.js';
import { init, Module } from './module.js';
import type { Init, Parameter } from './module.js';

/**
 * Y = X W + b, W [in, out]. 2-D inputs run as one Gemm (so the weight gradient is one Gemm too);
 * other ranks are flattened to 2-D and back.
 */
export class Linear extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean; init?: Init } = {}) {
    super();
    this.weight = this.param('w', [inFeatures, outFeatures], opts.init ?? init.uniformFanIn());
    this.bias = opts.bias === false ? null : this.param('b', [outFeatures], init.zeros());
  }

  forward(x: Tensor): Tensor {
    const x2 = x.rank === 2 ? x : x.reshape([-1, this.inFeatures]);
    const y = new Tensor(b.gemm(x2.value, this.weight.t.value, this.bias?.t.value ?? null));
    return x.rank === 2 ? y : y.reshape([...(x.shape.slice(0, -1) as number[]), -1]);
  }
}

/** Rows of a [num, dim] table picked by integer ids. */
export class Embedding extends Module {
  readonly weight: Parameter;

  constructor(readonly num: number, readonly dim: number, initializer: Init = init.normal(1)) {
    super();
    this.weight = this.param('w', [num, dim], initializer);
  }

  forward(ids: Tensor): Tensor { return this.weight.t.gather(ids); }
}

/** LayerNorm over the last dim, with affine weight (1) and bias (0). */
export class LayerNorm extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;

  constructor(readonly dim: number, readonly eps = 1e-5) {
    super();
    this.weight = this.param('w', [dim], init.ones());
    this.bias = this.param('b', [dim], init.zeros());
  }

  forward(x: Tensor): Tensor { return x.layerNorm(this.weight.t, this.bias.t, this.eps); }
}

/** Dropout: active in training mode when p > 0, the identity otherwise. */
export class Dropout extends Module {
  constructor(readonly p: number) {
    super();
    if (!(p >= 0 && p < 1)) throw new Error(`Dropout: p must be in [0, 1), got ${p}`);
  }

  forward(x: Tensor): Tensor { return this.training && this.p > 0 ? x.dropout(this.p) : x; }
}
