-- Ids stay within JavaScript's exact integers (2^53 - 1): the legacy app renders ids as JS numbers and would
-- print 9007199254740993 as 9007199254740992 (docs/API.md, "The HTTP edge"). The identity sequences stop
-- there, and a CHECK refuses an explicit id beyond it (OVERRIDING SYSTEM VALUE, a restore).
ALTER TABLE users ALTER COLUMN id SET MAXVALUE 9007199254740991;
ALTER TABLE posts ALTER COLUMN id SET MAXVALUE 9007199254740991;
ALTER TABLE users ADD CONSTRAINT users_id_js_safe CHECK (id <= 9007199254740991);
ALTER TABLE posts ADD CONSTRAINT posts_id_js_safe CHECK (id <= 9007199254740991);
