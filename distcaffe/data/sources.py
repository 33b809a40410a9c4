"""Record sources for the pipeline: a database (LMDB or LevelDB) of Datums, or an image list. Each gives len(),
key(i) and read(i) -> ((C, H, W) array, label), with errors naming the source and the record key."""
from .datum import datum_to_array, parse_datum, read_image
from .db import open_reader
from .image_list import read_image_list


class DBSource:
    """Datums of a database in cursor order; `color` is force_color/force_gray for encoded records."""

    def __init__(self, path, what, color=None, backend=None):
        self.reader = open_reader(path, what, backend)
        self.name = "%s %s" % (self.reader.label, path)
        self.keys = self.reader.keys()
        self.color = color

    def __len__(self):
        return len(self.keys)

    def key(self, i):
        return "%s record '%s'" % (self.name, self.keys[i].decode(errors="replace"))

    def read(self, i):
        where = self.key(i)
        datum = parse_datum(self.reader.get(self.keys[i]), where)
        return datum_to_array(datum, where, self.color), datum.label

    def close(self):
        self.reader.close()


class ImageListSource:
    """Images named by a list file under `root_folder`, decoded (colour or gray) and optionally resized."""

    def __init__(self, list_path, root_folder, what, is_color=True, new_height=0, new_width=0, short_side=0):
        self.name = "image list %s" % list_path
        self.list_path = list_path
        self.lines = read_image_list(list_path, "%s: image list" % what)
        self.root = root_folder
        self.is_color, self.new_height, self.new_width, self.short_side = is_color, new_height, new_width, short_side

    def __len__(self):
        return len(self.lines)

    def key(self, i):
        return "%s line %d (%s)" % (self.name, i + 1, self.root + self.lines[i][0])

    def read(self, i):
        name, label = self.lines[i]
        img = read_image(self.root + name, self.key(i), self.is_color, self.new_height, self.new_width,
                         self.short_side)
        return img, label

    def close(self):
        pass
