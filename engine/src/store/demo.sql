-- Demo data for `easymo seed --demo`: enough for every flow to show real lists.

insert into employers (name, phone) values
    ('Kigali Build Ltd', '250788100001'),
    ('Inyange Foods', '250788100002'),
    ('Rwanda Motors', '250788100003'),
    ('Hôtel des Mille Collines', '250788100004');

insert into job_categories (name) values
    ('Construction'), ('Driving'), ('Hospitality'), ('Sales'), ('Agriculture');

insert into jobs (category_id, employer_id, title, location, salary, description, posted_at)
select c.id, e.id, j.title, j.location, j.salary, j.description, now() - (j.age || ' hours')::interval
from (values
    ('Construction', 'Kigali Build Ltd', 'Mason', 'Kicukiro', '8,000 RWF/day', 'Brick and block work on a 3-storey site. 2 years experience.', 3),
    ('Construction', 'Kigali Build Ltd', 'Site helper', 'Kicukiro', '5,000 RWF/day', 'Carrying and mixing. No experience needed.', 20),
    ('Construction', 'Kigali Build Ltd', 'Electrician', 'Gasabo', '12,000 RWF/day', 'Wiring for new apartments. Certificate required.', 48),
    ('Driving', 'Rwanda Motors', 'Moto driver', 'Nyarugenge', 'Commission', 'Own licence A required; moto provided.', 5),
    ('Driving', 'Inyange Foods', 'Delivery truck driver', 'Kigali', '250,000 RWF/month', 'Licence C, deliveries across Kigali.', 30),
    ('Hospitality', 'Hôtel des Mille Collines', 'Waiter / Serveuse', 'Kiyovu', '180,000 RWF/month', 'English and French spoken. Evening shifts.', 2),
    ('Hospitality', 'Hôtel des Mille Collines', 'Room attendant', 'Kiyovu', '150,000 RWF/month', 'Morning shifts, training provided.', 72),
    ('Sales', 'Inyange Foods', 'Sales representative', 'Huye', '200,000 RWF/month + bonus', 'Visit shops in the Southern Province.', 10),
    ('Sales', 'Rwanda Motors', 'Spare parts seller', 'Nyarugenge', '160,000 RWF/month', 'Counter sales, basic bookkeeping.', 96)
) as j(category, employer, title, location, salary, description, age)
join job_categories c on c.name = j.category
join employers e on e.name = j.employer;

insert into property_types (name, description, sort_order) values
    ('Room', 'A room in a shared house', 1),
    ('Apartment', '1-3 bedroom apartments', 2),
    ('House', 'Whole houses with compound', 3),
    ('Shop', 'Commercial space', 4);

insert into properties (type_id, title, district, monthly_rent, listed_at)
select t.id, p.title, p.district, p.rent, now() - (p.age || ' days')::interval
from (values
    ('Room', 'Room near Kimironko market', 'Gasabo', 60000, 1),
    ('Room', 'Self-contained room, Nyamirambo', 'Nyarugenge', 80000, 4),
    ('Apartment', '2-bedroom, Kacyiru', 'Gasabo', 450000, 2),
    ('Apartment', 'Studio, Remera', 'Gasabo', 250000, 7),
    ('House', '3-bedroom house with garden, Kicukiro', 'Kicukiro', 700000, 3),
    ('Shop', 'Shop front on KN 3 Rd', 'Nyarugenge', 300000, 10)
) as p(type, title, district, rent, age)
join property_types t on t.name = p.type;

insert into product_categories (name) values ('Phones'), ('Groceries'), ('Clothing'), ('Home');

insert into products (category_id, name, price)
select c.id, p.name, p.price
from (values
    ('Phones', 'Tecno Spark 20', 145000),
    ('Phones', 'Itel A70', 89000),
    ('Phones', 'Phone charger', 6000),
    ('Groceries', 'Inyange milk 1L', 1000),
    ('Groceries', 'Rice 5kg', 9500),
    ('Groceries', 'Cooking oil 3L', 8500),
    ('Clothing', 'Kitenge dress', 25000),
    ('Clothing', 'School uniform', 12000),
    ('Home', 'Gas stove', 35000),
    ('Home', 'Solar lamp', 15000)
) as p(category, name, price)
join product_categories c on c.name = p.category;
