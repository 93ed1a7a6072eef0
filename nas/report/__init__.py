"""What people look at: pictures of a search (``figures``) and its self-contained HTML report (``page``), drawn
from the events alone."""
