"""``promoter console``: a Streamlit console for people, read from the topics and the gateways only."""
