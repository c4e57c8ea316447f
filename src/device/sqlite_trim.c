/* The statically linked agent's SQLite without the extensions it never uses (MCIM_STATIC_AGENT,
 * CMakeLists.txt; docs/device.md, "Footprint"). Linked into m2me only, before libsqlite3.a,
 * and not part of the library.
 *
 * Debian's SQLite is built with FTS3, FTS5, R-Tree, the dbstat and sqlite_stmt virtual tables;
 * sqlite3_open() registers each of them on every connection (sqlite3BuiltinExtensions[] in
 * SQLite's main.c), so a static link pulls their code in: 266 KB of the 939 KB of SQLite's
 * code, all of it made resident by the kernel's fault-around once the registration touched
 * it. These definitions come first: the archive's members that hold the real ones (fts3*.o,
 * fts5.o, rtree.o, dbstat.o, stmt.o) are then never needed, and opening a connection
 * registers nothing of them. agent.db's schema (src/device/store.c) uses none of them: a
 * statement that did ("USING fts5", "FROM dbstat") would fail with "no such module".
 *
 * These are SQLite's internal names (3.40, Debian 12): CMake checks that a program with them
 * links against the archive and opens a database, and leaves this file out otherwise (an
 * SQLite whose member holds another symbol the agent needs would give "multiple definition"). */
#include <sqlite3.h>

int sqlite3Fts3Init(sqlite3 *db);
int sqlite3Fts5Init(sqlite3 *db);
int sqlite3RtreeInit(sqlite3 *db);
int sqlite3DbstatRegister(sqlite3 *db);
int sqlite3StmtVtabInit(sqlite3 *db);

int sqlite3Fts3Init(sqlite3 *db)
{
  (void)db;
  return SQLITE_OK;
}

int sqlite3Fts5Init(sqlite3 *db)
{
  (void)db;
  return SQLITE_OK;
}

int sqlite3RtreeInit(sqlite3 *db)
{
  (void)db;
  return SQLITE_OK;
}

int sqlite3DbstatRegister(sqlite3 *db)
{
  (void)db;
  return SQLITE_OK;
}

int sqlite3StmtVtabInit(sqlite3 *db)
{
  (void)db;
  return SQLITE_OK;
}
