// actions.js — owns the one-shot actions: Clear (with an in-page confirmation dialog),
// Download PNG, the room switcher and the "Copy link" share button.

import { isValidRoom, roomPath } from './room.js';

/** Clear button → #clear-dialog → `onConfirm()` when #clear-confirm is pressed. */
export function setupClear({ button, dialog, confirmButton, cancelButton, onConfirm }) {
  const hasDialog = typeof dialog.showModal === 'function';
  button.addEventListener('click', () => {
    if (!hasDialog) {
      if (window.confirm('Clear the canvas for everyone in this room?')) onConfirm();
      return;
    }
    if (!dialog.open) dialog.showModal();
    cancelButton.focus(); // the safe choice gets the focus
  });
  confirmButton.addEventListener('click', () => {
    dialog.close('confirm');
    onConfirm();
  });
  cancelButton.addEventListener('click', () => dialog.close('cancel'));
  // A click on the backdrop (outside the dialog's box) cancels too.
  dialog.addEventListener('click', (e) => {
    if (e.target !== dialog) return;
    const r = dialog.getBoundingClientRect();
    const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
    if (!inside) dialog.close('cancel');
  });
}

export function setupDownload({ button, board, room, toast }) {
  button.addEventListener('click', async () => {
    try {
      const blob = await board.toPngOnWhite();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = `livecanvas-${room}.png`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      console.error(err);
      toast('Could not create the PNG', 'error');
    }
  });
}

export function setupRoomSwitch({ form, input, room, toast }) {
  input.value = room;
  input.addEventListener('input', () => input.removeAttribute('aria-invalid'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = input.value.trim();
    if (!isValidRoom(name)) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      toast('Room names are 1-64 letters, digits, "_" or "-"', 'error');
      return;
    }
    location.assign(roomPath(name));
  });
}

export function setupShare({ button, urlField, room, toast }) {
  const url = `${location.origin}${roomPath(room)}`;
  urlField.value = url;

  const showField = () => {
    urlField.hidden = false;
    urlField.focus();
    urlField.select();
  };
  urlField.addEventListener('blur', () => {
    urlField.hidden = true;
  });
  urlField.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' || e.key === 'Enter') urlField.blur();
  });

  button.addEventListener('click', async () => {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(url);
        toast('Link copied');
        return;
      } catch {
        // fall through to the manual copy
      }
    }
    showField();
    let copied = false;
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
    if (copied) urlField.blur(); // hides the field again
    toast(copied ? 'Link copied' : 'Press Ctrl+C (or ⌘C) to copy the link');
  });
}
