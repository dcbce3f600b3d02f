'use strict';
/** Page rendering shared by the list endpoints. */
const { toPost } = require('../repo/posts');

/** Build a Page from `rows` fetched with limit+1 (the extra row only says "there is more"). */
function page(rows, limit, offset, render) {
  return {
    items: rows.slice(0, limit).map(render),
    limit,
    offset,
    next_offset: rows.length > limit ? offset + limit : null,
  };
}

/** Render a post row that carries its author's name (postsRepo.list joins it in the same statement). */
function renderJoined(row) {
  return toPost(row, { id: row.author_id, name: row.author_name });
}

module.exports = { page, renderJoined };
