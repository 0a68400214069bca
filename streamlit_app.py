"""FaceTracker in the browser: `streamlit run streamlit_app.py`.

This file only wires the pages together; each page in `app_pages/` arranges widgets over the
`facetracker` package, which does the work. (Not `pages/`: Streamlit still treats a folder of that
name as the old automatic multipage app on a fresh server's first request to a page's URL, which
then runs the page without this file: no layout, and every file listed in the sidebar.)
"""

import streamlit as st

PAGES = [
    ("app_pages/home.py", "Home", ":material/home:"),
    ("app_pages/dataset.py", "Dataset", ":material/photo_library:"),
    ("app_pages/augment.py", "Augment", ":material/tune:"),
    ("app_pages/train.py", "Train", ":material/model_training:"),
    ("app_pages/detect.py", "Detect", ":material/videocam:"),
    ("app_pages/evaluate.py", "Evaluate", ":material/analytics:"),
]


def main() -> None:
    st.set_page_config(page_title="FaceTracker", page_icon=":material/face:", layout="wide")
    pages = [st.Page(path, title=title, icon=icon, default=(i == 0)) for i, (path, title, icon) in enumerate(PAGES)]
    st.navigation(pages).run()


main()
