/* Configuration: a good file, defaults, and every kind of error with its text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/config.h"
#include "mcim/log.h"

static const char *const formats[] = {"text", "json", NULL};

static const mcim_config_spec_t spec[] = {
    {.name = "name", .type = MCIM_CFG_STRING, .required = true, .min = 1, .max = 32,
     .help = "instance name"},
    {.name = "listen_port", .type = MCIM_CFG_INT, .required = true, .min = 1, .max = 65535,
     .help = "TCP port of the HTTPS server"},
    {.name = "tls", .type = MCIM_CFG_BOOL, .def = "true", .help = "serve TLS"},
    {.name = "database", .type = MCIM_CFG_PATH, .def = "ro.db", .help = "SQLite file"},
    {.name = "token_lifetime", .type = MCIM_CFG_DURATION, .def = "5m", .min = 1, .max = 86400,
     .help = "access token lifetime"},
    {.name = "log_format", .type = MCIM_CFG_ENUM, .def = "text", .allowed = formats},
    {.name = "workers", .type = MCIM_CFG_INT, .def = "4", .min = 1, .max = INT64_MAX},
    {.name = "db_password", .type = MCIM_CFG_STRING, .secret = true, .def = "s3cret-default"},
    {.name = "comment", .type = MCIM_CFG_STRING},
};
#define NSPEC (sizeof(spec) / sizeof(spec[0]))

/* Load from a string named "ro.json"; returns the cause, the text in err. */
static mcim_cause_t load(const char *json, mcim_config_t **cfg, char *err, size_t errlen)
{
  return mcim_config_load_string("ro.json", json, "/etc/mcim", spec, NSPEC, cfg, err, errlen);
}

/* The single error line a bad value gives. */
static void expect_error(const char *json, mcim_cause_t cause, const char *line)
{
  mcim_config_t *cfg = NULL;
  char err[1024];
  assert_int_equal(load(json, &cfg, err, sizeof(err)), cause);
  assert_null(cfg);
  assert_string_equal(err, line);
}

static void write_text(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void test_good_file(void **state)
{
  (void)state;
  char dir[256], path[320], err[512];
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof(dir), "%s/mcim-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/ro.json", dir);
  write_text(path, "{\n"
                   "  \"name\": \"ro\",\n"
                   "  \"listen_port\": 8443,\n"
                   "  \"tls\": false,\n"
                   "  \"database\": \"data/ro.db\",\n"
                   "  \"token_lifetime\": \"2h\",\n"
                   "  \"log_format\": \"json\",\n"
                   "  \"db_password\": \"hunter2\"\n"
                   "}\n");
  mcim_config_t *cfg = NULL;
  assert_int_equal(mcim_config_load(path, spec, NSPEC, &cfg, err, sizeof(err)), MCIM_OK);
  assert_string_equal(err, "");
  assert_non_null(cfg);
  assert_string_equal(mcim_config_file(cfg), path);
  assert_string_equal(mcim_config_str(cfg, "name"), "ro");
  assert_int_equal(mcim_config_int(cfg, "listen_port"), 8443);
  assert_false(mcim_config_bool(cfg, "tls"));
  char want[400];
  snprintf(want, sizeof(want), "%s/data/ro.db", dir); /* relative to the file's folder */
  assert_string_equal(mcim_config_path(cfg, "database"), want);
  assert_int_equal(mcim_config_duration(cfg, "token_lifetime"), 7200);
  assert_string_equal(mcim_config_str(cfg, "log_format"), "json");
  assert_int_equal(mcim_config_enum(cfg, "log_format"), 1);
  assert_int_equal(mcim_config_int(cfg, "workers"), 4); /* default */
  assert_string_equal(mcim_config_str(cfg, "db_password"), "hunter2");
  assert_false(mcim_config_has(cfg, "comment"));
  assert_null(mcim_config_str(cfg, "comment"));
  assert_true(mcim_config_has(cfg, "workers"));
  /* Asking for the wrong type is a bug: logged, empty value. */
  assert_int_equal(mcim_config_int(cfg, "name"), 0);
  assert_null(mcim_config_str(cfg, "no_such_key"));
  mcim_config_free(cfg);
  unlink(path);
  rmdir(dir);
}

static void test_defaults(void **state)
{
  (void)state;
  mcim_config_t *cfg = NULL;
  char err[256];
  assert_int_equal(load("{\"name\": \"ro\", \"listen_port\": 1, \"token_lifetime\": 90,"
                        " \"database\": \"/var/lib/mcim/ro.db\", \"comment\": \"\"}",
                        &cfg, err, sizeof(err)),
                   MCIM_OK);
  assert_true(mcim_config_bool(cfg, "tls"));
  assert_int_equal(mcim_config_duration(cfg, "token_lifetime"), 90);
  assert_string_equal(mcim_config_path(cfg, "database"), "/var/lib/mcim/ro.db");
  assert_string_equal(mcim_config_str(cfg, "log_format"), "text");
  assert_int_equal(mcim_config_enum(cfg, "log_format"), 0);
  assert_string_equal(mcim_config_str(cfg, "comment"), "");
  mcim_config_free(cfg);

  assert_int_equal(load("{\"name\": \"ro\", \"listen_port\": 65535}", &cfg, err, sizeof(err)),
                   MCIM_OK);
  assert_int_equal(mcim_config_duration(cfg, "token_lifetime"), 300);
  assert_string_equal(mcim_config_path(cfg, "database"), "/etc/mcim/ro.db");
  mcim_config_free(cfg);

  /* Durations in every unit. */
  static const struct {
    const char *v;
    int64_t s;
  } d[] = {{"1", 1}, {"\"45\"", 45}, {"\"45s\"", 45}, {"\"3m\"", 180}, {"\"1h\"", 3600},
           {"\"1d\"", 86400}};
  for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
    char json[128];
    snprintf(json, sizeof(json), "{\"name\": \"x\", \"listen_port\": 2, \"token_lifetime\": %s}",
             d[i].v);
    assert_int_equal(load(json, &cfg, err, sizeof(err)), MCIM_OK);
    assert_int_equal(mcim_config_duration(cfg, "token_lifetime"), d[i].s);
    mcim_config_free(cfg);
  }
}

static void test_wrong_values(void **state)
{
  (void)state;
  expect_error("{\"name\": \"ro\", \"listen_port\": \"abc\"}", MCIM_CONFIG_INVALID,
               "ro.json: \"listen_port\": expected an integer 1..65535, got \"abc\"");
  expect_error("{\"name\": \"ro\", \"listen_port\": 70000}", MCIM_CONFIG_INVALID,
               "ro.json: \"listen_port\": expected an integer 1..65535, got 70000");
  expect_error("{\"name\": \"ro\", \"listen_port\": 0}", MCIM_CONFIG_INVALID,
               "ro.json: \"listen_port\": expected an integer 1..65535, got 0");
  expect_error("{\"name\": \"ro\", \"listen_port\": 8443.5}", MCIM_CONFIG_INVALID,
               "ro.json: \"listen_port\": expected an integer 1..65535, got 8443.5");
  expect_error("{\"name\": \"ro\", \"listen_port\": null}", MCIM_CONFIG_INVALID,
               "ro.json: \"listen_port\": expected an integer 1..65535, got null");
  expect_error("{\"name\": \"ro\", \"listen_port\": 1, \"workers\": 0}", MCIM_CONFIG_INVALID,
               "ro.json: \"workers\": expected an integer >= 1, got 0");
  expect_error("{\"name\": \"ro\", \"listen_port\": 1, \"tls\": \"yes\"}", MCIM_CONFIG_INVALID,
               "ro.json: \"tls\": expected true or false, got \"yes\"");
  expect_error("{\"name\": \"ro\", \"listen_port\": 1, \"tls\": 1}", MCIM_CONFIG_INVALID,
               "ro.json: \"tls\": expected true or false, got 1");
  expect_error("{\"name\": \"ro\", \"listen_port\": 1, \"log_format\": \"xml\"}",
               MCIM_CONFIG_INVALID,
               "ro.json: \"log_format\": expected one of \"text\", \"json\", got \"xml\"");
  expect_error("{\"name\": \"\", \"listen_port\": 1}", MCIM_CONFIG_INVALID,
               "ro.json: \"name\": expected a string of 1..32 bytes, got \"\"");
  expect_error("{\"name\": [\"ro\"], \"listen_port\": 1}", MCIM_CONFIG_INVALID,
               "ro.json: \"name\": expected a string of 1..32 bytes, got an array");
  expect_error("{\"name\": \"ro\", \"listen_port\": 1, \"database\": \"\"}", MCIM_CONFIG_INVALID,
               "ro.json: \"database\": expected a path (a non-empty string), got \"\"");
  expect_error("{\"name\": \"ro\", \"listen_port\": 1, \"database\": {}}", MCIM_CONFIG_INVALID,
               "ro.json: \"database\": expected a path (a non-empty string), got an object");

  static const char dur[] = "expected a duration 1..86400 seconds (seconds, or a string like"
                            " \"90s\", \"5m\", \"2h\", \"1d\"), got ";
  static const struct {
    const char *v, *got;
  } bad[] = {{"\"5 minutes\"", "\"5 minutes\""}, {"\"5mm\"", "\"5mm\""}, {"\"m\"", "\"m\""},
             {"\"-5s\"", "\"-5s\""},             {"-1", "-1"},          {"0", "0"},
             {"\"0s\"", "\"0s\""},               {"\"2d\"", "\"2d\""},  {"1.5", "1.5"},
             {"\"99999999999999999999d\"", "\"99999999999999999999d\""}};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char json[160], line[400];
    snprintf(json, sizeof(json), "{\"name\": \"ro\", \"listen_port\": 1, \"token_lifetime\": %s}",
             bad[i].v);
    snprintf(line, sizeof(line), "ro.json: \"token_lifetime\": %s%s", dur, bad[i].got);
    expect_error(json, MCIM_CONFIG_INVALID, line);
  }
}

static void test_unknown_and_missing(void **state)
{
  (void)state;
  expect_error("{\"name\": \"ro\", \"lisen_port\": 8443}", MCIM_CONFIG_INVALID,
               "ro.json: \"lisen_port\": unknown key (did you mean \"listen_port\"?)\n"
               "ro.json: \"listen_port\": required key is missing (expected an integer 1..65535)");
  expect_error("{\"name\": \"ro\", \"listen_port\": 1, \"colour\": \"blue\"}", MCIM_CONFIG_INVALID,
               "ro.json: \"colour\": unknown key");
  expect_error("{}", MCIM_CONFIG_INVALID,
               "ro.json: \"name\": required key is missing (expected a string of 1..32 bytes)\n"
               "ro.json: \"listen_port\": required key is missing (expected an integer 1..65535)");
}

static void test_all_errors_reported(void **state)
{
  (void)state;
  expect_error("{\"listen_port\": \"x\", \"tls\": \"no\", \"extra\": 1}", MCIM_CONFIG_INVALID,
               "ro.json: \"listen_port\": expected an integer 1..65535, got \"x\"\n"
               "ro.json: \"tls\": expected true or false, got \"no\"\n"
               "ro.json: \"extra\": unknown key\n"
               "ro.json: \"name\": required key is missing (expected a string of 1..32 bytes)");
}

static void test_values_in_messages(void **state)
{
  (void)state;
  /* A secret is never echoed, whatever is wrong with it. */
  expect_error("{\"name\": \"ro\", \"listen_port\": 1, \"db_password\": 123456}",
               MCIM_CONFIG_INVALID,
               "ro.json: \"db_password\": expected a string, got an integer (value hidden)");
  /* Long values are cut, control characters and quotes escaped (one line per problem). */
  expect_error("{\"name\": \"ro\", \"listen_port\": \"0123456789012345678901234567890123456789"
               "0123456789\"}",
               MCIM_CONFIG_INVALID,
               "ro.json: \"listen_port\": expected an integer 1..65535, got "
               "\"0123456789012345678901234567890123456789...\"");
  expect_error("{\"name\": \"ro\", \"listen_port\": \"a\\nb\\\"c\\u00e9\"}", MCIM_CONFIG_INVALID,
               "ro.json: \"listen_port\": expected an integer 1..65535, got "
               "\"a\\x0ab\\\"c\\xc3\\xa9\"");

  /* A small error buffer is filled, terminated, never overrun. */
  mcim_config_t *cfg = NULL;
  char small[24];
  memset(small, 'Z', sizeof(small));
  assert_int_equal(load("{\"listen_port\": \"x\", \"tls\": \"no\"}", &cfg, small, 20),
                   MCIM_CONFIG_INVALID);
  assert_int_equal(strlen(small), 19);
  assert_int_equal(small[20], 'Z');
  assert_int_equal(load("{\"listen_port\": \"x\"}", &cfg, NULL, 0), MCIM_CONFIG_INVALID);
}

static void test_syntax_errors(void **state)
{
  (void)state;
  mcim_config_t *cfg = NULL;
  char err[512];
  assert_int_equal(load("{\"name\": \"ro\",\n \"listen_port\": 8443,,\n}", &cfg, err, sizeof(err)),
                   MCIM_CONFIG_INVALID);
  assert_null(cfg);
  assert_true(strncmp(err, "ro.json:2:", 10) == 0);
  assert_non_null(strstr(err, "invalid JSON"));
  assert_null(strchr(err, '\n'));

  assert_int_equal(load("{\"name\": \"a\", \"name\": \"b\"}", &cfg, err, sizeof(err)),
                   MCIM_CONFIG_INVALID);
  assert_true(strncmp(err, "ro.json:1:", 10) == 0);
  assert_non_null(strstr(err, "duplicate"));

  assert_int_equal(load("", &cfg, err, sizeof(err)), MCIM_CONFIG_INVALID);
  assert_non_null(strstr(err, "invalid JSON"));
  assert_int_equal(load("{\"name\": \"a\\u0000b\"}", &cfg, err, sizeof(err)), MCIM_CONFIG_INVALID);

  expect_error("[1, 2]", MCIM_CONFIG_INVALID,
               "ro.json: expected a JSON object at the top level, got an array");
}

static void test_missing_file(void **state)
{
  (void)state;
  mcim_config_t *cfg = NULL;
  char err[512];
  assert_int_equal(
      mcim_config_load("/nonexistent/mcim/ro.json", spec, NSPEC, &cfg, err, sizeof(err)),
      MCIM_CONFIG_MISSING);
  assert_null(cfg);
  assert_string_equal(err, "/nonexistent/mcim/ro.json: cannot read: No such file or directory");
  assert_int_equal(mcim_config_load("/", spec, NSPEC, &cfg, err, sizeof(err)), MCIM_CONFIG_MISSING);
  assert_true(strncmp(err, "/: cannot read:", 15) == 0);
  assert_int_equal(mcim_config_load(NULL, spec, NSPEC, &cfg, err, sizeof(err)),
                   MCIM_INVALID_ARGUMENT);
}

static void test_bad_spec(void **state)
{
  (void)state;
  mcim_config_t *cfg = NULL;
  char err[512];
  static const mcim_config_spec_t twice[] = {{.name = "a", .type = MCIM_CFG_INT},
                                             {.name = "a", .type = MCIM_CFG_BOOL}};
  assert_int_equal(mcim_config_load_string("x.json", "{}", NULL, twice, 2, &cfg, err, sizeof(err)),
                   MCIM_INTERNAL);
  assert_string_equal(err, "x.json: \"a\": named twice in the spec");
  static const mcim_config_spec_t noenum[] = {{.name = "e", .type = MCIM_CFG_ENUM}};
  assert_int_equal(mcim_config_load_string("x.json", "{}", NULL, noenum, 1, &cfg, err, sizeof(err)),
                   MCIM_INTERNAL);
  static const mcim_config_spec_t baddef[] = {
      {.name = "port", .type = MCIM_CFG_INT, .def = "http", .min = 1, .max = 65535}};
  assert_int_equal(mcim_config_load_string("x.json", "{}", NULL, baddef, 1, &cfg, err, sizeof(err)),
                   MCIM_INTERNAL);
  assert_string_equal(err, "x.json: \"port\": the built-in default does not fit its spec"
                           " (expected an integer 1..65535)");
  assert_null(cfg);
}

static void test_describe(void **state)
{
  (void)state;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  mcim_config_describe(spec, NSPEC, f);
  fclose(f);
  assert_non_null(strstr(buf, "listen_port              an integer 1..65535; required"));
  assert_non_null(strstr(buf, "TCP port of the HTTPS server"));
  assert_non_null(strstr(buf, "; default 5m"));
  assert_null(strstr(buf, "s3cret-default"));
  free(buf);
}

int main(void)
{
  /* Getter misuse logs by design; MCIM_TEST_LOG=1 shows it. */
  mcim_log_init("test", MCIM_LOG_TEXT,
                getenv("MCIM_TEST_LOG") ? MCIM_LOG_DEBUG : (mcim_log_level_t)(MCIM_LOG_ERROR + 1),
                NULL);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_file),         cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_wrong_values),      cmocka_unit_test(test_unknown_and_missing),
      cmocka_unit_test(test_all_errors_reported), cmocka_unit_test(test_values_in_messages),
      cmocka_unit_test(test_syntax_errors),     cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_bad_spec),          cmocka_unit_test(test_describe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
