"""Three fixed passages (a real-shaped 学則 第42条 and 第28条, a guide's prose) that the
evidence, grounding and trust tests quote exact spans from."""
from ingest.passage import Passage

TITLE = "東雲大学情報科学部学則"
P42 = Passage("g42", "学則.txt", TITLE, "第5章 休学、退学及び除籍", "第42条", "除籍", "", None,
              "（除籍）\n第４２条　学長は、次の各号のいずれかに該当する者を、教授会の意見を聴いて、除籍する。\n"
              "一　授業料の納付を怠り、督促してもなお納付しない者\n"
              "二　在学期間が第８条に定める年限を超えた者\n"
              "三　一の学年度において修得した単位数が１６単位に満たない者（ただし、最終学年に在学する者を除く。）\n")
P28 = Passage("g28", "学則.txt", TITLE, "第5章 休学、退学及び除籍", "第28条", "休学期間", "", None,
              "（休学期間）\n第２８条　休学期間は、１年以内とする。ただし、特別の理由がある場合は、"
              "引き続き休学を許可することができる。\n２　休学期間は、通算して４年を超えることができない。\n")
LIB = Passage("lib", "ガイド.md", "学生生活ガイド", "図書館", "", "", "", None,
              "図書館の開館時間は、平日の９時から２１時までです。土曜日は１７時に閉館します。")
