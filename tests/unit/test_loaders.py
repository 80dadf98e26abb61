import json
import urllib.error

import numpy as np
import pandas as pd
import pytest

from tfrec.data import loaders, schema
from tfrec.errors import TfrecError


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def ml100k(tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    write(d / "u.data", "1\t10\t5\t100\n1\t20\t3\t50\n2\t10\t4\t70\n")
    flags = ["0"] * 19
    action = flags.copy()
    action[1] = "1"
    action[5] = "1"
    write(d / "u.item", "10|Caf\xe9 Movie (1995)|01-Jan-1995||http://x|" + "|".join(action) + "\n"
          + "20|Untitled|01-Jan-1987||http://y|" + "|".join(flags) + "\n", encoding="latin-1")
    write(d / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return d


def test_movielens_100k(ml100k):
    raw = loaders.load("movielens-100k", str(ml100k))
    assert raw.interactions.to_dict("list") == {
        schema.USER_ID: ["1", "1", "2"], schema.ITEM_ID: ["10", "20", "10"],
        schema.TIMESTAMP: [100, 50, 70], schema.RATING: [5.0, 3.0, 4.0]}
    items = raw.items.set_index(schema.ITEM_ID)
    assert items.loc["10", schema.TITLE] == "Café Movie"          # latin-1 decoded, year split off
    assert items.loc["10", schema.YEAR] == 1995
    assert items.loc["20", schema.YEAR] == 1987                   # from the release date
    assert list(items.loc["10", schema.GENRES]) == ["Action", "Comedy"]
    assert raw.users.set_index(schema.USER_ID).loc["2", schema.OCCUPATION] == "other"
    assert set(raw.checksums) == {"u.data", "u.item", "u.user"}


def test_movielens_1m(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(tmp_path / "movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James (1996)::Animation|Children's\n", "latin-1")
    write(tmp_path / "users.dat", "1::F::1::10::48067\n")
    raw = loaders.load("movielens-1m", str(tmp_path))
    assert raw.interactions[schema.ITEM_ID].tolist() == ["1193", "661"]
    assert list(raw.items.set_index(schema.ITEM_ID).loc["661", schema.GENRES]) == ["Animation", "Children's"]
    assert raw.users[schema.GENDER].tolist() == ["F"]


def test_movielens_latest_small(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,3,4.5,964981247\r\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\r\n1,Toy Story (1995),Adventure|Animation\r\n3,"Grumpier Old Men, The (1995)",(no genres listed)\r\n')
    write(tmp_path / "tags.csv", "userId,movieId,tag,timestamp\r\n2,1,Pixar,1\r\n3,1,pixar,2\r\n3,1,fun,3\r\n")
    raw = loaders.load("movielens-latest-small", str(tmp_path))
    items = raw.items.set_index(schema.ITEM_ID)
    assert items.loc["3", schema.TITLE] == "Grumpier Old Men, The"
    assert list(items.loc["3", schema.GENRES]) == []
    assert list(items.loc["1", schema.TAGS]) == ["fun", "pixar"]
    assert raw.interactions[schema.RATING].tolist() == [4.0, 4.5]


def test_amazon_s3rec_order_becomes_time(tmp_path):
    write(tmp_path / "Beauty.txt", "1 5 3 9\n2 3 4\n")
    write(tmp_path / "Beauty_item2attributes.json", json.dumps({"3": [1, 2], "5": [7], "9": [], "4": [2]}))
    raw = loaders.load("amazon-s3rec", str(tmp_path))
    assert raw.interactions.to_dict("list") == {
        schema.USER_ID: ["1", "1", "1", "2", "2"], schema.ITEM_ID: ["5", "3", "9", "3", "4"],
        schema.TIMESTAMP: [0, 1, 2, 0, 1]}
    assert raw.timestamp_kind == "order" and raw.source == "amazon-s3rec:Beauty"
    assert raw.items.set_index(schema.ITEM_ID).loc["3", schema.ATTRIBUTES] == ["1", "2"]


def test_csv_with_column_mapping_items_and_dates(tmp_path):
    write(tmp_path / "events.csv", "uid,sku,when,stars\na,x,2024-01-02T00:00:00Z,5\nb,y,2024-01-01T00:00:00Z,3\n")
    write(tmp_path / "items.csv", "sku,brand,tags\nx,acme,red|big\ny,zeta,\n")
    raw = loaders.load("csv", str(tmp_path / "events.csv"),
                       columns={"user_id": "uid", "item_id": "sku", "timestamp": "when", "rating": "stars"},
                       items=str(tmp_path / "items.csv"), list_columns=("tags",))
    assert raw.interactions[schema.TIMESTAMP].tolist() == [1704153600, 1704067200]
    assert raw.interactions[schema.RATING].tolist() == [5.0, 3.0]
    assert raw.items[schema.TAGS].tolist() == [["red", "big"], []]


def test_parquet_and_dataframe(tmp_path):
    df = pd.DataFrame({"u": ["a", "a"], "i": [1, 2], "t": [5, 6]})
    df.to_parquet(tmp_path / "x.parquet")
    for data in (str(tmp_path / "x.parquet"), df):
        raw = loaders.load_table(data, columns={"user_id": "u", "item_id": "i", "timestamp": "t"})
        assert raw.interactions[schema.ITEM_ID].tolist() == ["1", "2"]


def test_order_as_time_without_timestamp():
    df = pd.DataFrame({"user_id": ["a", "b", "a"], "item_id": ["x", "y", "z"]})
    raw = loaders.load_table(df, order_as_time=True)
    assert raw.interactions[schema.TIMESTAMP].tolist() == [0, 0, 1]


# --- bad input: one sentence naming the file and the problem ---

def test_missing_file(tmp_path):
    with pytest.raises(TfrecError, match=r"u.data is missing"):
        loaders.load("movielens-100k", str(tmp_path))


def test_wrong_separator(ml100k):
    write(ml100k / "u.data", "1,10,5,100\n")
    with pytest.raises(TfrecError, match=r"u.data line 1 has 1 tab-separated fields where 4 were expected"):
        loaders.load("movielens-100k", str(ml100k))


def test_wrong_encoding(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,5\n")
    (tmp_path / "movies.csv").write_bytes(b"movieId,title,genres\n1,Caf\xe9,Drama\n")
    # "movieId,title,genres\n" is 21 bytes, "1,Caf" 5 more: the \xe9 sits at offset 26
    with pytest.raises(TfrecError, match=r"movies.csv is not valid utf-8 text \(first bad byte at offset 26\)"):
        loaders.load("movielens-latest-small", str(tmp_path))


def test_missing_column(tmp_path):
    write(tmp_path / "e.csv", "uid,sku\na,x\n")
    with pytest.raises(TfrecError, match=r"e.csv lacks the column timestamp"):
        loaders.load("csv", str(tmp_path / "e.csv"), columns={"user_id": "uid", "item_id": "sku"})


def test_non_numeric_timestamp(ml100k):
    write(ml100k / "u.data", "1\t10\t5\tyesterday\n")
    with pytest.raises(TfrecError, match=r"u.data: timestamp 'yesterday' on row 1 is not a number"):
        loaders.load("movielens-100k", str(ml100k))
    with pytest.raises(TfrecError, match=r"timestamp 'soon' is neither a number nor a date"):
        loaders.load_table(pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "timestamp": ["soon"]}))


def test_duplicate_item_ids(ml100k):
    text = (ml100k / "u.item").read_bytes().decode("latin-1")
    write(ml100k / "u.item", text + text.splitlines()[0] + "\n", "latin-1")
    with pytest.raises(TfrecError, match=r"u.item: item_id '10' appears more than once"):
        loaders.load("movielens-100k", str(ml100k))


def test_unknown_source_and_empty_file(tmp_path):
    with pytest.raises(TfrecError, match="unknown data source 'nope'"):
        loaders.load("nope")
    write(tmp_path / "Beauty.txt", "")
    with pytest.raises(TfrecError, match="Beauty.txt is empty"):
        loaders.load("amazon-s3rec", str(tmp_path))


def test_offline_download_says_how_to_proceed(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TFREC_DATA_DIR", raising=False)  # no local copy either

    def offline(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(loaders.__dict__["ensure_files"].__globals__["urllib"].request, "urlopen", offline)
    with pytest.raises(TfrecError, match=r"could not be downloaded from https://files.grouplens.org/.*pass --path DIR"):
        loaders.load("movielens-100k")
    assert not (tmp_path / "cache" / "movielens-100k").exists()


def test_cached_copy_is_used_without_network(tmp_path, monkeypatch, ml100k):
    import shutil

    monkeypatch.setenv("TFREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TFREC_DATA_DIR", raising=False)  # no local copy: the cache is next
    shutil.copytree(ml100k, tmp_path / "cache" / "movielens-100k")
    raw = loaders.load("movielens-100k")
    assert len(raw.interactions) == 3 and np.all(raw.interactions[schema.RATING] > 0)


def test_local_copy_under_tfrec_data_dir_comes_before_the_cache(tmp_path, monkeypatch, ml100k):
    import shutil

    def offline(*a, **k):
        raise AssertionError("nothing may be downloaded when a local copy exists")

    monkeypatch.setattr(loaders.__dict__["ensure_files"].__globals__["urllib"].request, "urlopen", offline)
    monkeypatch.setenv("TFREC_CACHE_DIR", str(tmp_path / "empty-cache"))
    shutil.copytree(ml100k, tmp_path / "data" / "ml-100k")
    monkeypatch.setenv("TFREC_DATA_DIR", str(tmp_path / "data"))
    raw = loaders.load("movielens-100k")
    assert len(raw.interactions) == 3 and raw.path == str(tmp_path / "data" / "ml-100k")
