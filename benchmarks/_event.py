"""The event the delivery benchmarks (MongoDB, Celery, event bus) emit.

An Open edX problem check: a request context of four keys and about 600 bytes of data
as JSON, built once, as a caller emitting a fixed payload would.
"""

NAME = "edx.problem.check"
CONTEXT = {
    "user_id": 48213,
    "org_id": "Example",
    "course_id": "course-v1:Example+Intro101+2024",
    "path": "/courses/intro-101/unit/7",
}
DATA = {
    "problem_id": "block-v1:Example+Intro101+2024+type@problem+block@4f1c8e2a9b7d4e05",
    "attempts": 2,
    "grade": 7,
    "max_grade": 10,
    "success": "incorrect",
    "answers": {"q1": "choice_2", "q2": ["choice_0", "choice_3"], "q3": "42.5"},
    "correct_map": {
        "q1": {"correctness": "correct", "hint": "", "npoints": 1},
        "q2": {"correctness": "incorrect", "hint": "Two answers are right.", "npoints": 0},
        "q3": {"correctness": "correct", "hint": "", "npoints": 1},
    },
    "submission": {"q3": {"question": "What is 85 / 2?", "answer": "42.5", "variant": "7"}},
    "agent": "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
}
