// toolbar.js — owns the brush: colour (picker + palette), size slider, the tool (pen, eraser, line,
// rectangle, ellipse, arrow, text), the fill toggle, and the keyboard shortcuts (E eraser, P/B pen,
// L line, R rectangle, O ellipse, A arrow, T text, [ / ] size). Fires 'change' when the brush
// changes.

const PALETTE = [
  ['#000000', 'Black'],
  ['#6b7280', 'Grey'],
  ['#ffffff', 'White'],
  ['#e53935', 'Red'],
  ['#fb8c00', 'Orange'],
  ['#fdd835', 'Yellow'],
  ['#43a047', 'Green'],
  ['#00acc1', 'Teal'],
  ['#1e88e5', 'Blue'],
  ['#8e24aa', 'Purple'],
];
const MIN_SIZE = 1;
const MAX_SIZE = 64;
// Every tool and its button's id is `tool-NAME`; the shape and text tools are figures.js's.
const TOOLS = ['pen', 'eraser', 'line', 'rect', 'ellipse', 'arrow', 'text'];
const TOOL_KEYS = { e: 'eraser', p: 'pen', b: 'pen', l: 'line', r: 'rect', o: 'ellipse', a: 'arrow', t: 'text' };

export class Toolbar extends EventTarget {
  #color;
  #size;
  #tool = 'pen';
  #fill = false;
  #el;

  constructor(doc = document) {
    super();
    const $ = (id) => doc.getElementById(id);
    this.#el = {
      color: $('color'),
      size: $('size'),
      sizeValue: $('size-value'),
      sizePreview: $('size-preview'),
      palette: $('palette'),
      tools: TOOLS.map((tool) => [tool, $(`tool-${tool}`)]).filter(([, button]) => button),
      fill: $('fill'),
    };
    this.#color = this.#el.color.value.toLowerCase();
    this.#size = Number(this.#el.size.value) || 4;
    this.#buildPalette(doc);

    this.#el.color.addEventListener('input', () => this.setColor(this.#el.color.value));
    this.#el.size.addEventListener('input', () => this.setSize(Number(this.#el.size.value)));
    for (const [tool, button] of this.#el.tools) button.addEventListener('click', () => this.setTool(tool));
    this.#el.fill?.addEventListener('click', () => this.setFill(!this.#fill));
    doc.addEventListener('keydown', (e) => this.#onKey(e));
    this.#render();
  }

  get brush() {
    return { color: this.#color, size: this.#size, tool: this.#tool, fill: this.#fill };
  }

  setColor(color) {
    this.#color = String(color).toLowerCase();
    // Picking a colour while erasing most likely means "I want to draw again".
    if (this.#tool === 'eraser') this.#tool = 'pen';
    this.#changed();
  }

  setSize(size) {
    this.#size = Math.min(MAX_SIZE, Math.max(MIN_SIZE, Math.round(size) || MIN_SIZE));
    this.#changed();
  }

  setTool(tool) {
    this.#tool = TOOLS.includes(tool) ? tool : 'pen';
    this.#changed();
  }

  /** Whether rectangles and ellipses are filled (with the colour). */
  setFill(fill) {
    this.#fill = Boolean(fill);
    this.#changed();
  }

  #buildPalette(doc) {
    for (const [color, name] of PALETTE) {
      const b = doc.createElement('button');
      b.type = 'button';
      b.className = 'swatch';
      b.dataset.color = color;
      b.title = name;
      b.setAttribute('aria-label', name);
      b.style.backgroundColor = color;
      b.addEventListener('click', () => this.setColor(color));
      this.#el.palette.append(b);
    }
  }

  #changed() {
    this.#render();
    this.dispatchEvent(new Event('change'));
  }

  #render() {
    const el = this.#el;
    if (el.color.value.toLowerCase() !== this.#color) el.color.value = this.#color;
    if (Number(el.size.value) !== this.#size) el.size.value = String(this.#size);
    el.sizeValue.textContent = String(this.#size);
    const dot = Math.max(2, Math.min(28, this.#size));
    el.sizePreview.style.width = `${dot}px`;
    el.sizePreview.style.height = `${dot}px`;
    el.sizePreview.style.backgroundColor = this.#tool === 'eraser' ? 'transparent' : this.#color;
    el.sizePreview.classList.toggle('eraser', this.#tool === 'eraser');
    for (const [tool, button] of el.tools) button.setAttribute('aria-pressed', String(this.#tool === tool));
    el.fill?.setAttribute('aria-pressed', String(this.#fill));
    for (const sw of el.palette.children) {
      sw.setAttribute('aria-pressed', String(sw.dataset.color === this.#color));
    }
    document.body.dataset.tool = this.#tool;
  }

  #onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
    const t = e.target;
    if (t instanceof Element && t.closest('input, textarea, select, [contenteditable], dialog')) return;
    if (document.querySelector('dialog[open]')) return;
    const step = Math.max(1, Math.round(this.#size * 0.15));
    const tool = e.key.length === 1 ? TOOL_KEYS[e.key.toLowerCase()] : undefined;
    if (tool) {
      this.setTool(tool);
      e.preventDefault();
      return;
    }
    switch (e.key) {
      case '[':
        this.setSize(this.#size - step);
        break;
      case ']':
        this.setSize(this.#size + step);
        break;
      default:
        return;
    }
    e.preventDefault();
  }
}
