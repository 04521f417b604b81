"""Placeholder: the student-edition Sphinx extension (being written)."""
def setup(app):
    app.add_config_value("student_edition", False, "env")
    return {"parallel_read_safe": True}
