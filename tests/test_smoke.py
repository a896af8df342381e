from tickrun import App


def test_enqueue_and_run(db_url: str) -> None:
    app = App(database_url=db_url)
    seen = []

    @app.task
    def hello(name: str) -> None:
        seen.append(name)

    app.use_database(db_url)
    app.enqueue("hello", {"name": "a"})
    summary = app.run()
    assert seen == ["a"]
    assert summary.succeeded == 1
