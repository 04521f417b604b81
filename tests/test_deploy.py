"""deploy/class_server.py's checks that need no server: secrets, rosters, settings, the files it writes."""
import configparser
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
import class_server
from class_server import ClassServerError, Settings

GOOD = {"CLASS_DB_PASSWORD": "a" * 12, "MLFLOW_AUTH_ADMIN_PASSWORD": "b" * 12,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "c" * 12}


@pytest.mark.parametrize("missing", class_server.SECRETS)
def test_every_secret_is_required_and_named_when_missing(missing):
    with pytest.raises(ClassServerError, match=missing):
        class_server.read_secrets({k: v for k, v in GOOD.items() if k != missing})


def test_a_short_secret_is_refused():
    with pytest.raises(ClassServerError, match="CLASS_DB_PASSWORD must have at least 12"):
        class_server.read_secrets(GOOD | {"CLASS_DB_PASSWORD": "password"})
    assert class_server.read_secrets(GOOD) == GOOD


def test_a_roster_is_a_list_or_a_csv_of_valid_distinct_login_names(tmp_path):
    plain = tmp_path / "roster.txt"
    plain.write_text("# term 1\nana\n\nbo-2\n")
    assert class_server.read_roster(plain) == ["ana", "bo-2"]
    table = tmp_path / "roster.csv"
    table.write_text("username,email\nana,ana@example.com\nbo_2,bo@example.com\n")
    assert class_server.read_roster(table) == ["ana", "bo_2"]
    plain.write_text("ana\nAna Smith\n")
    with pytest.raises(ClassServerError, match="Ana Smith"):
        class_server.read_roster(plain)
    plain.write_text("ana\nbo\nana\n")
    with pytest.raises(ClassServerError, match=r"twice: \['ana'\]"):
        class_server.read_roster(plain)


def test_settings_round_trip_and_a_missing_one_says_what_to_run(tmp_path):
    settings = Settings(tmp_path, mlflow_port=5123, students=["ana"])
    settings.save()
    assert Settings.load(tmp_path) == settings
    with pytest.raises(ClassServerError, match="run `class_server.py up --home"):
        Settings.load(tmp_path / "elsewhere")


def test_the_database_uri_and_auth_config_hold_no_secret(tmp_path):
    settings = Settings(tmp_path)
    assert settings.db_uri("mlflow") == "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow"
    config = configparser.ConfigParser()
    config.read(class_server.write_auth_config(settings))
    section = config["mlflow"]
    assert section["default_permission"] == "NO_PERMISSIONS" and section["admin_username"] == "instructor"
    assert "admin_password" not in section and "password" not in section["database_uri"]


def test_a_students_env_file_reads_back_as_what_the_shell_exports(tmp_path):
    settings = Settings(tmp_path, mlflow_port=5123, ssh_port=2200)
    (tmp_path / "accounts" / "ana").mkdir(parents=True)
    (tmp_path / "accounts" / "ana" / "class.env").write_text(class_server.student_env(settings, "ana", "s3cret"))
    env = class_server.read_student_env(settings, "ana")
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5123"
    assert env["MLFLOW_TRACKING_USERNAME"] == "ana" and env["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    assert env["MLOPS_LAB_DVC_REMOTE"] == f"ssh://ana@127.0.0.1:2200{tmp_path}/dvc/ana"
    assert set(env) == {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                        "MLOPS_LAB_DVC_REMOTE"}


def test_a_students_ssh_config_names_the_host_port_user_and_key(tmp_path):
    block = class_server.student_ssh_config(Settings(tmp_path, ssh_port=2200), "ana")
    assert "Host 127.0.0.1\n    Port 2200\n    User ana\n    IdentityFile ~/.ssh/mlops-class_ed25519\n" in block


def test_the_cli_says_what_is_missing_instead_of_a_traceback(tmp_path, capsys):
    assert class_server.main(["health", "--home", str(tmp_path)]) == 2
    assert "not found: run `class_server.py up" in capsys.readouterr().err
