// toolbar.js — owns the brush: colour (picker + the page's palette), size slider, the tool (one
// button per tool in #tools, each naming its tool in data-tool: pen, eraser, and figures.js's line,
// rectangle, ellipse, arrow and text), the fill toggle, the keyboard shortcuts (E eraser, P/B pen,
// L line, R rectangle, O ellipse, A arrow, T text, [ / ] size), and the compact layout's pop-over
// buttons showing the tool and brush. Fires 'change' when the brush changes. It never draws and
// never sends anything.

const MIN_SIZE = 1;
const MAX_SIZE = 64;
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
      tools: $('tools'),
      toolsIcon: $('tools-toggle-icon'),
      brushDot: $('brush-toggle-dot'),
      fill: $('fill'),
    };
    this.#color = this.#el.color.value.toLowerCase();
    this.#size = Number(this.#el.size.value) || 4;
    this.#colourSwatches();

    this.#el.color.addEventListener('input', () => this.setColor(this.#el.color.value));
    this.#el.size.addEventListener('input', () => this.setSize(Number(this.#el.size.value)));
    this.#el.tools.addEventListener('click', (e) => {
      const button = e.target instanceof Element ? e.target.closest('[data-tool]') : null;
      if (!button) return;
      this.setTool(button.dataset.tool);
      // On a compact screen the tools are a pop-over: a pick closes it.
      if (this.#el.tools.matches(':popover-open')) this.#el.tools.hidePopover();
    });
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
    this.#tool = 'pen';
    this.#changed();
  }

  setSize(size) {
    this.#size = Math.min(MAX_SIZE, Math.max(MIN_SIZE, Math.round(size) || MIN_SIZE));
    this.#changed();
  }

  /** Selects `tool` if it has a button in #tools; otherwise the pen. */
  setTool(tool) {
    this.#tool = this.#toolButtons().some((b) => b.dataset.tool === tool) ? tool : 'pen';
    this.#changed();
  }

  /** Whether rectangles and ellipses are filled (with the colour). */
  setFill(fill) {
    this.#fill = Boolean(fill);
    this.#changed();
  }

  #toolButtons() {
    return [...this.#el.tools.querySelectorAll('[data-tool]')];
  }

  /** The palette's swatches are in the page (so its size is known before any script runs). */
  #colourSwatches() {
    for (const swatch of this.#el.palette.querySelectorAll('[data-color]')) {
      swatch.style.backgroundColor = swatch.dataset.color; // a CSSOM property: the CSP allows it
      swatch.addEventListener('click', () => this.setColor(swatch.dataset.color));
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
    this.#renderDot(el.sizePreview, 2, 28);
    this.#renderDot(el.brushDot, 12, 24); // big enough to show the colour
    for (const button of this.#toolButtons()) {
      const pressed = button.dataset.tool === this.#tool;
      button.setAttribute('aria-pressed', String(pressed));
      // The compact layout's tools button shows the current tool's icon.
      const icon = button.querySelector('svg');
      if (pressed && icon) el.toolsIcon.replaceChildren(icon.cloneNode(true));
    }
    el.fill?.setAttribute('aria-pressed', String(this.#fill));
    for (const sw of el.palette.children) {
      sw.setAttribute('aria-pressed', String(sw.dataset.color === this.#color));
    }
    document.body.dataset.tool = this.#tool;
  }

  /** A dot of the brush's size (from `min` to `max` CSS pixels) and colour; dashed for the eraser. */
  #renderDot(dot, min, max) {
    const side = Math.max(min, Math.min(max, this.#size));
    dot.style.width = `${side}px`;
    dot.style.height = `${side}px`;
    dot.style.backgroundColor = this.#tool === 'eraser' ? 'transparent' : this.#color;
    dot.classList.toggle('eraser', this.#tool === 'eraser');
  }

  #onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
    const t = e.target;
    if (t instanceof Element && t.closest('input, textarea, select, [contenteditable], dialog, form')) return;
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
