'use strict';
/**
 * SQL for posts. Every statement that returns posts joins their authors' names (`author_name`) in the same
 * statement, so a post and its author come from one snapshot (never a null author).
 */

const COLUMNS = 'id, author_id, title, body, created_at, updated_at';
// Joins a CTE `p` of posts rows to their authors, newest first.
const WITH_AUTHOR = 'SELECT p.*, u.name AS author_name FROM p JOIN users u ON u.id = p.author_id ORDER BY p.id DESC';

/** A posts row plus its author as the API renders it (key order of docs/API.md). */
function toPost(row, author) {
  return {
    id: row.id,
    author_id: row.author_id,
    title: row.title,
    body: row.body,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
    author,
  };
}

function postsRepo(pool) {
  return {
    async findById(id) {
      const { rows } = await pool.query(`WITH p AS (SELECT ${COLUMNS} FROM posts WHERE id = $1) ${WITH_AUTHOR}`, [id]);
      return rows[0] || null;
    },

    async create(authorId, { title, body }) {
      const { rows } = await pool.query(
        `INSERT INTO posts (author_id, title, body) VALUES ($1, $2, $3) RETURNING ${COLUMNS}`,
        [authorId, title, body],
      );
      return rows[0];
    },

    /**
     * One page by id descending, optionally for one author; limit+1 rows, each with `author_name`.
     * ONE statement: the page and its authors come from one snapshot, so an author deleted meanwhile
     * takes its posts with it and no post is ever rendered with a null author.
     */
    async list(limit, offset, authorId = null) {
      const { rows } = await pool.query(
        `WITH p AS (SELECT ${COLUMNS} FROM posts WHERE ($3::bigint IS NULL OR author_id = $3)
                    ORDER BY id DESC LIMIT $1 OFFSET $2) ${WITH_AUTHOR}`,
        [limit + 1, offset, authorId],
      );
      return rows;
    },

    /** Update title/body; updated_at moves forward by at least 1 ms (see usersRepo.update); with author_name. */
    async update(id, { title, body }) {
      const { rows } = await pool.query(
        `WITH p AS (UPDATE posts SET
           title = COALESCE($2, title),
           body = COALESCE($3, body),
           updated_at = GREATEST(clock_timestamp(), updated_at + interval '1 millisecond')
         WHERE id = $1 RETURNING ${COLUMNS}) ${WITH_AUTHOR}`,
        [id, title ?? null, body ?? null],
      );
      return rows[0] || null;
    },

    async remove(id) {
      const { rowCount } = await pool.query('DELETE FROM posts WHERE id = $1', [id]);
      return rowCount > 0;
    },
  };
}

module.exports = { postsRepo, toPost };
