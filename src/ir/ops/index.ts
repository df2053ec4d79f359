/** Registers every op weft knows. Import for side effects. */
import './elementwise.js';
import './linalg.js';
import './reduce.js';
import './shape.js';
import './indexing.js';
import './nn.js';
import './vision.js';
import './collective.js';
import './storage.js';
import './quant.js';
